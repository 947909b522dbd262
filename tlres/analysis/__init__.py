"""Reading finished runs: the results schema, the report, comparisons, and the ablation grid."""
