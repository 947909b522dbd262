"""The foundation every layer uses: the errors a user can fix, the `Config` and its presets,
the statistics, the memory estimate, and the one matplotlib setup with every figure."""
