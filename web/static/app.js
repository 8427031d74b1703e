// Progressive enhancements; every page works without them.
document.addEventListener("DOMContentLoaded", () => {
  const type = document.querySelector("select[name=schedule_type]");
  if (type) {
    const show = () => document.querySelectorAll(".schedule").forEach((el) => {
      el.hidden = !el.classList.contains(type.value);
    });
    type.addEventListener("change", show);
    show();
  }
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});
