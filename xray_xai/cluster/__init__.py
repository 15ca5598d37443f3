"""Clustering the features behind "abnormal" calls: the feature cache and the cluster command."""
