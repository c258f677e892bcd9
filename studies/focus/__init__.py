"""The focus study (issue 28): `focus`, RegionE, every seed method, cache and peer on the toy's local and global
edits, judged on the edit as well as on fidelity to `full`."""
