# Stand-in for registry.k8s.io/e2e-test-images/agnhost (the README's
# walkthrough pod): the dig image plus agnhost's `pause` subcommand.
ARG DIG_IMAGE
FROM ${DIG_IMAGE}
RUN printf '#!/bin/sh\nexec sleep infinity\n' >/usr/local/bin/pause && chmod 755 /usr/local/bin/pause
