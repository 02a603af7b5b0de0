#!/usr/bin/env bash
exec "$(dirname "$0")/run-scripts.sh" reference "$(dirname "$0")/reference"
