"""The nnU-Net glue of this project's trainers and benchmarks."""
