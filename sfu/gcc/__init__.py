"""Send-side bandwidth estimation from transport-wide congestion control feedback, in the
spirit of Google Congestion Control (draft-ietf-rmcat-gcc, libwebrtc's ``goog_cc``).

Pure: every input carries its time; nothing here sends, sleeps or reads a clock.
"""
