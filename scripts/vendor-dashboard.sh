#!/usr/bin/env bash
# Refresh the dashboard's vendored front-end libraries (controlplane/dashboard/static/vendor/<pkg>/) from the npm
# registry: `npm pack` at a pinned version, its sha256 checked, the files we serve copied with their LICENSE.
# The committed files are what ships (wheel and images); users never need Node or the network. Run it only to
# change a version: edit the pins, run, commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
STATIC=controlplane/dashboard/static
command -v npm >/dev/null 2>&1 || { echo "vendor-dashboard: npm is needed to refresh vendored assets" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# uPlot (charts on the endpoint page).
UPLOT=1.6.32; UPLOT_SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
mkdir -p "$STATIC/vendor/uplot"
npm pack --loglevel=error "uplot@$UPLOT" --pack-destination "$tmp" >/dev/null && echo "$UPLOT_SHA256  $tmp/uplot-$UPLOT.tgz" | sha256sum -c -
tar -xzf "$tmp/uplot-$UPLOT.tgz" -C "$tmp" && cp "$tmp/package/dist/uPlot.esm.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$STATIC/vendor/uplot/"

echo "vendor-dashboard: done; review and commit $STATIC/vendor/"
