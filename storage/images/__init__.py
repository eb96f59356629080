"""Image handling: sniffing, ingest, dataset archives (read and write), contact sheets, lint."""
