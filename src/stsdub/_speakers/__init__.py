"""Who speaks and with which voice: cluster labels and turns, the live speaker tracker, voice casting."""
