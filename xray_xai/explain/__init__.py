"""The explain command's work: heatmaps for every model x method, overlays and figures."""
