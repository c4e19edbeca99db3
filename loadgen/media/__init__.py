"""Media the bots send: a tone and a counting test pattern (:mod:`.synthetic`), three
simulcast layers sent by hand (:mod:`.simulcast`), and the clips ``parley load`` encodes
once and replays (:mod:`.prepared`)."""
