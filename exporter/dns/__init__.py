"""DNS queries and answers, matched in the traffic classifier."""
