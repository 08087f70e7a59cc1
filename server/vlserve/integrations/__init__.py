"""vlserve on other serving systems. Each integration imports its system lazily, so
`import vlserve.integrations.<name>` works without it and says what to install when used.

ray_serve: online serving on Ray Serve (`serve run deploy/ray/serve.yaml`).
"""
