#!/bin/sh
# The HTML report test looks at the rendered page in a real headless browser (Debian's chromium).
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "installing chromium (for the HTML report test)..."
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium >/dev/null && exit 0
fi
echo "warning: chromium is not installed; the browser test of 'archdsl report' will be skipped" >&2
exit 0
