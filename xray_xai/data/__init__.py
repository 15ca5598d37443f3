"""Films and data sets: decoding and guards, dataset readers, preprocessing, masks."""
