#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter, or explain how to provide one and fail.
# The worker stack (torch 1.13.1 + torchvision 0.14.1) has no wheels for newer Pythons.
set -u
is310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }
for candidate in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
  path=$(command -v "$candidate" 2>/dev/null) && is310 "$path" && { echo "$path"; exit 0; }
done
if command -v pyenv >/dev/null 2>&1; then
  for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
    path="$(pyenv prefix "$version" 2>/dev/null)/bin/python3.10"
    is310 "$path" && { echo "$path"; exit 0; }
  done
fi
echo "error: no Python 3.10 found (torch 1.13.1 + torchvision 0.14.1 need it)." >&2
echo "       install one (e.g. 'pyenv install 3.10') or run: make PYTHON=/path/to/python3.10 ..." >&2
exit 1
