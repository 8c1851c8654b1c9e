"""Estimates free of Ray and torch: GPU time from FLOPs and published figures, the seconds per video earlier runs
measured, and the shape of what ``svdbatch plan`` reports. Imports items/, spec/ and the foundation."""
