"""Weight quantization of the engine's projections: FP8 E4M3 on Hopper (`fp8`), the checkpoint formats it reads
(`checkpoint`) and turning a loaded model's projections into FP8 ones (`apply`)."""
