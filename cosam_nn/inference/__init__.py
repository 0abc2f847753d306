"""A trained model used in this process: cosam_predict (a study to a reviewed result) and cosam_segment
(a reader's box to a node)."""
