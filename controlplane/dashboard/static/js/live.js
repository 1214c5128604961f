// @ts-check
/** Small helpers of the create form, the charts and the playground. */

/**
 * Link a stylesheet of ours once (the CSP allows only same-origin stylesheets, never inline style).
 * @param {string} href a same-origin path
 */
export function linkStylesheet(href) {
  if (document.querySelector(`link[rel="stylesheet"][href="${CSS.escape(href)}"]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.appendChild(link);
}
