"""Zero-downtime model upgrades: re-encode every source with a new model version into its own
collections, then switch the live aliases (`reindex`); the Admin gRPC service that runs it
(`service`); the command and Kubernetes Job that drive it (`__main__`, `rollout`)."""
