"""int8: the one QDQ quantizer, calibration shared by a run, and the mixed-precision search."""
