// Progressive enhancements; every page works without them. No inline scripts: the CSP forbids them.
function showScheduleFields(root) {
  const checked = root.querySelector("input[name=schedule_type]:checked");
  if (!checked) return;
  root.querySelectorAll(".schedule").forEach((el) => {
    el.hidden = !el.classList.contains(checked.value);
  });
}

// Send the browser's time zone once, while the user has none, then show the page in it.
async function reportZone(form) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone) return;
  form.elements.timezone.value = zone;
  const answer = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
  if (answer.ok && zone !== "UTC") window.location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  document.querySelectorAll("input[data-browser-zone]").forEach((input) => { input.value = zone || ""; });
  const detect = document.getElementById("detect-zone");
  if (detect) reportZone(detect);
  const form = document.querySelector(".task-form");
  if (form) {
    form.addEventListener("change", (event) => {
      if (event.target.name === "schedule_type") showScheduleFields(form);
    });
    showScheduleFields(form);
  }
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
});

// Delegated, so buttons inside fragments swapped in by htmx work too.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const text = source.value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    source.hidden = false;  // no clipboard permission: show the text selected instead
    source.select();
  }
  const label = button.textContent;
  button.textContent = button.dataset.copied;
  setTimeout(() => { button.textContent = label; }, 1500);
});

// Keep open outputs open when htmx swaps in a newer runs list.
document.addEventListener("htmx:beforeSwap", (event) => {
  const open = [...event.detail.target.querySelectorAll("details[open]")].map((d) => d.id);
  window.__openOutputs = open;
});
document.addEventListener("htmx:afterSwap", () => {
  (window.__openOutputs || []).forEach((id) => {
    const details = document.getElementById(id);
    if (details) details.open = true;
  });
  window.__openOutputs = [];
});

// The task form's Test run: the form as it stands, sent once; the answer is shown as text, never as HTML.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.test-run");
  if (!button) return;
  const box = document.getElementById("test-result");
  const error = box.querySelector(".test-error");
  const output = box.querySelector(".test-output");
  const usage = box.querySelector(".test-usage");
  const label = button.textContent;
  button.disabled = true;
  button.textContent = button.dataset.busy;
  let body = null;
  try {
    const response = await fetch(button.dataset.url, {method: "POST", body: new FormData(button.form),
                                                      headers: {"Accept": "application/json"}});
    body = await response.json();
  } catch (failure) {
    body = {error: button.dataset.failed};
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
  const problems = body.fields ? Object.entries(body.fields).map(([field, text]) => `${field}: ${text}`) : [];
  const message = [body.error && !body.fields ? body.error : body.message, ...problems].filter(Boolean).join("\n");
  error.textContent = message;
  error.hidden = !message;
  const shown = body.parsed_output != null ? JSON.stringify(body.parsed_output, null, 2) : (body.output || "");
  output.textContent = shown;
  output.hidden = !shown;
  usage.textContent = body.usage ? `${body.usage.total_tokens ?? "?"} tokens` : "";
  box.hidden = false;
});
