// Renders /api/docs with the vendored Swagger UI; a file, not inline script, as the CSP requires.
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  if (!root || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Validation would send the document to an outside service; the CSP would block it anyway.
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
