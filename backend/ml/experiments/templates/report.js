(function () {
  function key(cell, numeric) {
    var raw = cell.getAttribute('data-value');
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }
  function sortBy(table, header, index) {
    var declared = header.getAttribute('data-type');
    var numeric = declared ? declared === 'number' :
      Array.prototype.every.call(table.tBodies[0].rows, function (row) {
        var cell = row.cells[index];
        if (!cell) return true;
        var raw = cell.getAttribute('data-value');
        if (raw === null) raw = cell.textContent.trim();
        return raw === '' || !isNaN(parseFloat(raw));
      });
    var ascending = header.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(header.parentNode.cells, function (th) {
      th.removeAttribute('aria-sort');
    });
    header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === null || x === '') return (y === null || y === '') ? 0 : 1;  // missing last
      if (y === null || y === '') return -1;
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var headerRow = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(headerRow.cells, function (header, index) {
      header.addEventListener('click', function () { sortBy(table, header, index); });
    });
  });
})();
