"""``parley load``: many synthetic participants over several processes. The run and
its command line (:mod:`.run`), the worker processes (:mod:`.worker`) and their lean bots
(:mod:`.bots`), their signaling with Parley or Janus (:mod:`.session`, :mod:`.janus`),
receiver feedback (:mod:`.rtcp`), measurements (:mod:`.metrics`, :mod:`.e2e`), the
capacity search (:mod:`.capacity`) and the verdict (:mod:`.verdict`)."""
