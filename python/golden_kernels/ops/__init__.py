"""One module per op, each with forward, forward_fp32 and backward."""
