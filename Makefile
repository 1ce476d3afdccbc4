# The checks CI runs (.ci/run), for use before a commit: `make check` (style and types), `make test`.
.PHONY: check lint types test

check: lint types

lint:
	ruff check forrestq tests bench

types:
	mypy

test:
	pytest
