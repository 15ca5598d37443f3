"""Contract checks that third-party plugin authors can run on their own plugins (like sklearn check_estimator)."""
