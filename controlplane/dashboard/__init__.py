"""The web dashboard: static page shells and plain ES modules served by the control plane itself (no CDN, no build
step, no Node for users). The pages are clients of the public API (`/v2/...`, `/api/...`), signed in through
`/api/session`'s cookie; nothing here reads the database.

- `pages.py`: `/` → `/ui/`, one shell per page, the static assets under `/ui/static/`.
- `security.py`: the headers every dashboard response carries (a strict CSP: no inline script or style).
- `static/js/`: `app.js` (layout, page loading), `api.js` (fetch with the CSRF header, 401 → sign-in, the error
  envelope), `dom.js` (DOM builders: text is only ever set as text), `pages/<page>.js` (one module per page).
"""

from controlplane.dashboard.pages import router, static_app
from controlplane.dashboard.security import DashboardHeadersMiddleware

__all__ = ["DashboardHeadersMiddleware", "router", "static_app"]
