"""The embed pipeline: the same encoders as `mmindex embed`, inside Beam RunInference, for clusters."""
