// #/market — barter offers: create, filter by scope, list.
import { h } from './dom.js';
import { post, pager } from './api.js';
import { can } from './session.js';
import { field, select, errorBox, showError, clearError, busy, pageHeader, pagedList } from './ui.js';
import { renderOffer, CATEGORIES, CONDITIONS } from './render.js';

const SCOPES = [['all', 'All offers'], ['local', 'This node'], ['federated', 'Federated']];

function offerForm(onCreated) {
  const title = h('input', { id: 'offer-title', required: true, maxlength: '200' });
  const category = select({ id: 'offer-category' }, CATEGORIES, 'gear');
  const offered = h('textarea', { id: 'offer-offered', rows: '2', required: true, maxlength: '2000' });
  const wanted = h('textarea', { id: 'offer-wanted', rows: '2', required: true, maxlength: '2000' });
  const condition = select({ id: 'offer-condition' }, CONDITIONS, 'good');
  const location = h('input', { id: 'offer-location', maxlength: '200', autocomplete: 'address-level2' });
  const submit = h('button', { id: 'offer-submit', type: 'submit', class: 'primary' }, 'Publish offer');
  const error = errorBox('offer-error');
  const form = h('form', { id: 'offer-form', class: 'card', novalidate: true },
    h('h2', {}, 'New offer'),
    field('Title', title),
    h('div', { class: 'row' }, field('Category', category), field('Condition', condition)),
    field('What you offer', offered),
    field('What you want in exchange', wanted),
    field('Location (optional)', location),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const body = {
      title: title.value.trim(), category: category.value, offered: offered.value.trim(),
      wanted: wanted.value.trim(), condition: condition.value,
    };
    if (location.value.trim()) body.location = location.value.trim();
    if (!body.title || !body.offered || !body.wanted) {
      showError(error, 'Give the offer a title and say what you offer and what you want.');
      return;
    }
    try {
      const item = await busy(submit, () => post('/offers', body));
      form.reset();
      onCreated(item);
    } catch (err) {
      showError(error, err);
    }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Market', 'Swap gear, presets, samples and services with other musicians.'));
  const scope = select({ id: 'offer-scope' }, SCOPES, 'all');
  const list = h('div', { id: 'offer-list', class: 'item-list' });
  const more = h('button', { id: 'offer-more', type: 'button', class: 'more', hidden: true }, 'Load more');
  const error = errorBox('offer-list-error');
  let paged = null;
  if (can('post')) {
    view.append(offerForm((item) => { if (scope.value !== 'federated') paged.prepend(item); }));
  }
  view.append(h('section', { class: 'offers', 'aria-label': 'Offers' },
    h('div', { class: 'toolbar' }, field('Show', scope)), error, list, more));
  paged = pagedList({ list, more, errorEl: error, renderItem: renderOffer, emptyText: 'No offers here yet.' });
  scope.addEventListener('change', () => paged.reload(pager('/offers', { scope: scope.value })));
  await paged.reload(pager('/offers', { scope: scope.value }));
}
