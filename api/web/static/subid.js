/* The partner portal's SubID builder: the links follow the SubID as it is typed (the form's Build button does the
   same without JavaScript). */
(() => {
  'use strict';
  var input = document.querySelector('[data-subid]');
  if (!input) return;
  input.addEventListener('input', () => {
    var sid = input.value.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 100);
    document.querySelectorAll('[data-link]').forEach(field => {
      var url = new URL(field.dataset.link);
      if (sid) url.searchParams.set('sid', sid); else url.searchParams.delete('sid');
      field.value = url.toString();
    });
  });
})();
