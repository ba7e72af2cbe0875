"""The virtual site: the whole system on simulated hardware, and scenarios run on it
(docs/virtual-site.md)."""
