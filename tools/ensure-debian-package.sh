#!/bin/sh
# Install a Debian package when what it provides is missing (used by the Makefile's setup):
#   sh tools/ensure-debian-package.sh PACKAGE 'CHECK COMMAND' 'WHAT IT IS FOR'
# Without apt-get, or without the rights to use it, it only warns: the caller goes on.
PKG=$1
CHECK=$2
WHY=$3
sh -c "$CHECK" >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "installing $PKG ($WHY)..."
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "$PKG" >/dev/null && exit 0
fi
echo "warning: $PKG is not installed ($WHY)" >&2
exit 0
