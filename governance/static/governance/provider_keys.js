// The virtual key page's provider configs: each row's key picker shows only the keys of the
// provider chosen in that row (options carry data-provider), and "all keys" and a picked key
// exclude each other. The form checks both again when it is saved.
(function () {
  "use strict";
  function field(row, name) {
    return row.querySelector("[name$='-" + name + "']");
  }
  function rowOf(element) {
    return element.closest("tr.form-row, .inline-related");
  }
  function showKeysOf(row) {
    var provider = field(row, "provider");
    var keys = field(row, "keys");
    if (!provider || !keys) { return; }
    Array.prototype.forEach.call(keys.options, function (option) {
      var owner = option.getAttribute("data-provider");
      var mine = !owner || owner === provider.value;
      option.hidden = !mine;
      option.disabled = !mine;
      if (!mine) { option.selected = false; }
    });
  }
  function rows() {
    return document.querySelectorAll("#provider_configs-group tr.form-row");
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(rows(), showKeysOf);
  });
  document.addEventListener("formset:added", function (event) {
    if (event.detail && event.detail.formsetName === "provider_configs") { showKeysOf(event.target); }
  });
  document.addEventListener("change", function (event) {
    var target = event.target;
    var row = target.closest ? rowOf(target) : null;
    if (!row || !row.closest("#provider_configs-group")) { return; }
    if (/-provider$/.test(target.name)) { showKeysOf(row); }
    var all = field(row, "allow_all_keys");
    var keys = field(row, "keys");
    if (/-keys$/.test(target.name) && all && keys.selectedOptions.length) { all.checked = false; }
    if (/-allow_all_keys$/.test(target.name) && target.checked && keys) {
      Array.prototype.forEach.call(keys.options, function (option) { option.selected = false; });
    }
  });
})();
