// Starts Swagger UI on the service's own OpenAPI document. Every asset comes from this service, so the
// page works without internet access; nothing here calls another host.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.addEventListener("load", function () {
    window.ui = SwaggerUIBundle({
      url: root.getAttribute("data-spec-url"),
      domNode: root,
      deepLinking: true,
      // The default would fetch a validity badge from validator.swagger.io.
      validatorUrl: null,
      // BaseLayout has no top bar, so the standalone preset (and its URL box) is not needed.
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      // Keys typed into Authorize survive a reload of the page in this browser tab only.
      persistAuthorization: true,
    });
  });
})();
