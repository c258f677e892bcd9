"""The Sparse Context part of the toy study: two fine-tunes (with and without random reference drop), the
selection grid on the toy model and both copies (`run`), and its section of docs/toy-results.md (`doc`)."""
