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
  const preview = document.querySelector("[data-preview-url]");
  if (preview) {
    // Live next-runs preview, computed by the server with the same code beat fires by.
    const form = preview.closest("form");
    const names = ["schedule_type", "interval_minutes", "time", "cron", "timezone", "run_at", "start_at",
      "end_at", "max_runs", "catchup_seconds"];
    let timer = null;
    const refresh = async () => {
      const body = {};
      names.forEach((name) => {
        const input = form.elements[name];
        if (input && input.value !== "") body[name] = input.value;
      });
      const response = await fetch(preview.dataset.previewUrl, {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRFToken": form.elements.csrf_token.value},
        body: JSON.stringify(body),
      });
      const data = await response.json();
      const list = preview.querySelector(".preview-runs");
      list.replaceChildren();
      if (response.ok) {
        preview.querySelector(".preview-words").textContent = data.description;
        data.next_runs.forEach((iso) => {
          const item = document.createElement("li");
          item.textContent = new Date(iso).toLocaleString() + " (" + iso + ")";
          list.append(item);
        });
      } else {
        preview.querySelector(".preview-words").textContent = Object.values(data.fields || {}).join(" ");
      }
    };
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 300); });
    refresh();
  }
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});
