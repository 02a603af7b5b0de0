#!/usr/bin/env bash
exec "$(dirname "$0")/run-scripts.sh" integration "$(dirname "$0")/integration"
