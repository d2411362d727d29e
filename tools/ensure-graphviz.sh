#!/bin/sh
# Debian's graphviz provides the `dot` program that renders SVG/PNG/PDF; install it when missing.
command -v dot >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "installing graphviz (for the 'dot' program)..."
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq graphviz >/dev/null && exit 0
fi
echo "warning: graphviz's 'dot' is not installed; .dot output works, .svg/.png need it" >&2
exit 0
