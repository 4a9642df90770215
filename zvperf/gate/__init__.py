"""The regression gate, without torch or pytest: judging results against baselines (``judge``), its settings
(``config``), the per-hardware baseline store (``baselines``) and the options shared by the plugin and the CLI."""
