"""The scripts that measure BENCHMARKS.md, one per section (``python benchmarks/<script>.py``
or ``python -m benchmarks.<script>``), over one runner (``runner``: runs, pool, deadline,
records, provenance) and one report (``report``: the sections joined). Nothing in ctxconv
imports this package."""
