"""Ray Data bulk jobs and Ray Serve deployments on a local Ray cluster the tests start."""
