// #/course/<id> — one course with its lessons in order.
import { h, append } from './dom.js';
import { get } from './api.js';
import { errorBox, showError, badge } from './ui.js';
import { renderCourseCard, labelOf, FORMATS } from './render.js';

function renderLesson(lesson, index) {
  const l = lesson && typeof lesson === 'object' ? lesson : {};
  return h('li', { class: 'lesson card' },
    h('h3', { class: 'lesson-heading' },
      h('span', { class: 'lesson-number' }, `${index + 1}. `),
      typeof l.title === 'string' && l.title ? l.title : 'Untitled lesson'),
    h('div', { class: 'badges' },
      l.format ? badge(labelOf(FORMATS, l.format), 'format') : null,
      Number.isFinite(l.minutes) ? badge(`${l.minutes} min`) : null),
    typeof l.text === 'string' && l.text ? h('p', { class: 'lesson-body' }, l.text) : null);
}

export async function render(view, { id }) {
  append(view, h('p', {}, h('a', { href: '#/courses', class: 'back' }, '← All courses')));
  const error = errorBox('course-page-error');
  append(view, error);
  let course;
  try {
    course = await get(`/courses/${encodeURIComponent(id)}`);
  } catch (err) {
    append(view, h('h1', { id: 'course-heading', tabindex: '-1' }, 'Course'));
    showError(error, err);
    return;
  }
  const b = course.body || {};
  const lessons = Array.isArray(b.lessons) ? b.lessons : [];
  // Reuse the catalog card for author/time/badges, then the full lesson list.
  const card = renderCourseCard(course);
  const heading = card.querySelector('.course-title');
  heading.replaceWith(h('h1', { id: 'course-heading', class: 'course-title', tabindex: '-1' },
    typeof b.title === 'string' && b.title ? b.title : 'Untitled course'));
  append(view, card,
    h('h2', {}, 'Lessons'),
    lessons.length
      ? h('ol', { id: 'lesson-list', class: 'lesson-list' }, lessons.map(renderLesson))
      : h('p', { class: 'muted' }, 'This course has no lessons yet.'));
  document.title = `${typeof b.title === 'string' && b.title ? b.title : 'Course'} · Talas`;
}
