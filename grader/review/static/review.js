// Keys for the question queue; every action also works without this script (plain form posts).
// j / k: next / previous group; 1-9: toggle that rubric item of the focused group; Enter: save it.
(function () {
  "use strict";
  function groups() { return Array.prototype.slice.call(document.querySelectorAll("section.group")); }
  function current() {
    var active = document.activeElement;
    return active && active.closest ? active.closest("section.group") : null;
  }
  function move(step) {
    var all = groups();
    if (!all.length) { return; }
    var at = all.indexOf(current());
    var next = all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))];
    next.focus();
    next.scrollIntoView({block: "nearest"});
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" ||
      (target.tagName === "INPUT" && target.type !== "checkbox" && target.type !== "submit"));
    if (typing) { return; }
    var group = current();
    if (event.key === "j") { move(1); event.preventDefault(); return; }
    if (event.key === "k") { move(-1); event.preventDefault(); return; }
    if (!group) { return; }
    if (/^[1-9]$/.test(event.key)) {
      var box = group.querySelectorAll("form.decide input[name=items]")[Number(event.key) - 1];
      if (box) { box.checked = !box.checked; event.preventDefault(); }
      return;
    }
    if (event.key === "Enter" && (!target || target.tagName !== "BUTTON")) {
      var form = group.querySelector("form.decide");
      if (form) { event.preventDefault(); form.requestSubmit ? form.requestSubmit() : form.submit(); }
    }
  });
  if (groups().length && !location.hash) { groups()[0].focus(); }
  else if (location.hash) {
    var id = location.hash.slice(1);
    var target = document.getElementById(id) || document.getElementById(decodeURIComponent(id));
    if (target && target.classList.contains("group")) { target.focus(); }
  }
}());
