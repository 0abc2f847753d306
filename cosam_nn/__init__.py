"""cosam-nn: CoSAM for metastatic perirectal lymph nodes, as an nnU-Net v2 plugin."""
__version__ = "0.1.0"
