// #/courses — course catalog and the create-course form with dynamic lessons.
import { h } from './dom.js';
import { post, pager } from './api.js';
import { can } from './session.js';
import { field, select, errorBox, showError, clearError, busy, pageHeader, pagedList } from './ui.js';
import { renderCourseCard, LEVELS, FORMATS } from './render.js';

let lessonSeq = 0; // unique ids for lesson inputs

function lessonEditor(onRemove) {
  const n = ++lessonSeq;
  const title = h('input', { id: `lesson-title-${n}`, class: 'lesson-title', required: true, maxlength: '200' });
  const format = select({ id: `lesson-format-${n}`, class: 'lesson-format' }, [['', '—'], ...FORMATS], 'guide');
  const minutes = h('input', { id: `lesson-minutes-${n}`, class: 'lesson-minutes', type: 'number', min: '1', max: '600', inputmode: 'numeric' });
  const text = h('textarea', { id: `lesson-text-${n}`, class: 'lesson-text', rows: '3', maxlength: '20000' });
  const remove = h('button', { type: 'button', class: 'small danger lesson-remove' }, 'Remove lesson');
  const box = h('fieldset', { class: 'lesson-editor' },
    h('legend', {}, 'Lesson'),
    field('Lesson title', title),
    h('div', { class: 'row' }, field('Format', format), field('Minutes', minutes)),
    field('Content', text),
    h('div', { class: 'actions' }, remove));
  remove.addEventListener('click', () => onRemove(box));
  return box;
}

/** Read one lesson editor into the contract's lesson shape. */
function readLesson(box) {
  const lesson = { title: box.querySelector('.lesson-title').value.trim() };
  const format = box.querySelector('.lesson-format').value;
  const text = box.querySelector('.lesson-text').value.trim();
  const minutes = parseInt(box.querySelector('.lesson-minutes').value, 10);
  if (format) lesson.format = format;
  if (text) lesson.text = text;
  if (Number.isFinite(minutes) && minutes > 0) lesson.minutes = minutes;
  return lesson;
}

function courseForm(onCreated) {
  const title = h('input', { id: 'course-title', required: true, maxlength: '200' });
  const summary = h('textarea', { id: 'course-summary', rows: '2', maxlength: '2000' });
  const level = select({ id: 'course-level' }, [['', 'Any level'], ...LEVELS], '');
  const lessons = h('div', { id: 'course-lessons', class: 'lessons' });
  const add = h('button', { id: 'course-add-lesson', type: 'button' }, 'Add lesson');
  const submit = h('button', { id: 'course-submit', type: 'submit', class: 'primary' }, 'Publish course');
  const error = errorBox('course-error');

  // Keep legends numbered "Lesson 1..n" and never allow removing the last one.
  const renumber = () => {
    const boxes = [...lessons.children];
    boxes.forEach((box, i) => {
      box.querySelector('legend').textContent = `Lesson ${i + 1}`;
      box.querySelector('.lesson-remove').hidden = boxes.length === 1;
    });
  };
  const addLesson = () => {
    const box = lessonEditor((b) => { b.remove(); renumber(); });
    lessons.append(box);
    renumber();
    return box;
  };
  add.addEventListener('click', () => addLesson().querySelector('.lesson-title').focus());
  addLesson();

  const form = h('form', { id: 'course-form', class: 'card', novalidate: true },
    h('h2', {}, 'New course'),
    field('Course title', title), field('Summary', summary), field('Level', level),
    h('h3', {}, 'Lessons'), lessons,
    h('div', { class: 'actions' }, add), error,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const body = { title: title.value.trim(), lessons: [...lessons.children].map(readLesson) };
    if (summary.value.trim()) body.summary = summary.value.trim();
    if (level.value) body.level = level.value;
    if (!body.title) { showError(error, 'Give the course a title.'); title.focus(); return; }
    if (body.lessons.some((l) => !l.title)) { showError(error, 'Every lesson needs a title.'); return; }
    try {
      const item = await busy(submit, () => post('/courses', body));
      form.reset();
      while (lessons.children.length > 1) lessons.lastChild.remove();
      renumber();
      onCreated(item);
    } catch (err) {
      showError(error, err);
    }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Courses', 'Lessons shared by musicians on this node and beyond.'));
  const list = h('div', { id: 'course-list', class: 'item-list' });
  const more = h('button', { id: 'course-more', type: 'button', class: 'more', hidden: true }, 'Load more');
  const error = errorBox('course-list-error');
  let paged = null;
  if (can('post')) {
    const details = h('details', { class: 'create' }, h('summary', {}, 'Create a course'),
      courseForm((item) => paged.prepend(item)));
    view.append(details);
  }
  view.append(h('section', { 'aria-label': 'Catalog' }, h('h2', {}, 'Catalog'), error, list, more));
  paged = pagedList({ list, more, errorEl: error, renderItem: renderCourseCard, emptyText: 'No courses yet.' });
  await paged.reload(pager('/courses'));
}
