"""An example third-party xray-xai plugin package."""
