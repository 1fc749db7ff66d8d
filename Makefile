# pop3d: plain make, no autoconf.  -Werror only in `make check` and CI.
PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
EXDIR	?= $(PREFIX)/share/doc/pop3d/examples

CC	?= cc
WARN	 = -Wall -Wextra -Wformat=2 -Wshadow -Wconversion -Wsign-conversion \
	   -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
	   -Wcast-qual -Wwrite-strings -Wundef -Wvla
CFLAGS	?= -O2 -g
HARDEN	 = -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
ALLCFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(WARN) $(HARDEN) $(CFLAGS) $(EXTRA_CFLAGS)
LDHARDEN = -pie -Wl,-z,relro,-z,now
LIBS	 = -lpam -lcrypt -llockfile -lmd

OBJS	 = pop3d.o auth.o mailbox.o io.o log.o
HDRS	 = pop3d.h io.h mailbox.h auth.h

all: pop3d

pop3d: $(OBJS)
	$(CC) $(ALLCFLAGS) $(LDHARDEN) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

%.o: %.c $(HDRS)
	$(CC) $(ALLCFLAGS) -c -o $@ $<

# Unit tests link the modules without main() (pop3d.c guards it).
UNITOBJS = mailbox.o io.o log.o
tests/unit: tests/unit.c $(UNITOBJS) $(HDRS)
	$(CC) $(ALLCFLAGS) -I. $(LDFLAGS) -o $@ tests/unit.c $(UNITOBJS) $(LIBS)

clean:
	rm -f pop3d *.o tests/*.o tests/unit tests/fuzz_* 
	rm -rf tests/tmp asan

.PHONY: all clean
