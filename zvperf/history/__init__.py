"""The history of measured runs, readable without torch or pytest: the store (``store``, read; ``writer``, append),
the trends and change points found in it (``trends``) and the release the regressions are counted from
(``releases``). It builds on ``zvperf.results`` alone; the report reads it, never writes it."""
