"""Participants behind impaired links: a network namespace and veth pair per link with
``tbf`` rate and ``iptables`` loss (:mod:`.link`), and the schedule of link states a
load run applies over time (:mod:`.schedule`)."""
