/* TALLY_FLIGHT_SIGNAL=1: SIGUSR1 writes the flight records of every live communicator of the
 * process (comm/flight.h) to the log and TALLY_FLIGHT_DIR, for a job that seems stuck. A library must
 * not take signals by default, so nothing is installed unless the user asks.
 *
 * The handler only write(2)s a byte to a pipe (async-signal-safe, and it saves errno); a thread
 * waiting on the pipe does the dump in a normal context, where it may take locks, allocate and
 * format: the registry's lock keeps communicators alive meanwhile and each recorder's lock keeps its
 * records consistent while calls go on (TALLY_FLIGHT_SIGNAL makes the recorder take it). Dumping in
 * the handler itself could deadlock on a lock the interrupted thread holds (stdio's, malloc's). */
#ifndef TALLY_FLIGHT_SIGNAL_H
#define TALLY_FLIGHT_SIGNAL_H

/* Installs the SIGUSR1 handler and starts the dumping thread, once per process; a failure is logged
 * (WARN) and leaves the signal alone. */
void tally_flight_signal_arm(void);

#endif
