"""The collaboration protocol: messages, trust strategies, aggregation, peers and rounds."""
