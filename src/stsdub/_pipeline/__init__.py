"""The fragment pipeline: streams (order, exactly-once, timeouts), stage runners, backpressure, duration."""
